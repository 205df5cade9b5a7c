// WebSocket ping-pong floor in C, epoll vs io_uring, against the perf kit's fws echo peer on
// ws://127.0.0.1:9003/ (start it as scripts/bench-compare.sh does): N conns, 64 B text, 1 s
// warm-up, then SECS measured; prints client CPU us/msg (getrusage). Not part of any suite:
// the experiment behind driver-mio/PERF.md "io_uring, measured".
//   gcc -O2 -o /tmp/wsfloor scripts/floor/wsfloor.c
//   taskset -c 1 /tmp/wsfloor epoll|uring N SECS
// uring = one io_uring_enter per turn submitting every send and re-armed recv and waiting for
// one completion (no syscall per message at all).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <linux/io_uring.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
static double now(){ struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+t.tv_nsec/1e9; }
static double cpu(){ struct rusage r; getrusage(RUSAGE_SELF,&r); return r.ru_utime.tv_sec+r.ru_utime.tv_usec/1e6+r.ru_stime.tv_sec+r.ru_stime.tv_usec/1e6; }
static int open_ws(){ int s=socket(AF_INET,SOCK_STREAM,0); struct sockaddr_in a={.sin_family=AF_INET,.sin_port=htons(9003),.sin_addr.s_addr=htonl(INADDR_LOOPBACK)};
  if(connect(s,(void*)&a,sizeof a)){perror("connect");exit(1);} int one=1; setsockopt(s,IPPROTO_TCP,TCP_NODELAY,&one,4);
  const char*req="GET / HTTP/1.1\r\nHost: 127.0.0.1:9003\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  write(s,req,strlen(req)); char h[4096]; int n=0; while(n<4||memcmp(h+n-4,"\r\n\r\n",4)){ if(read(s,h+n,1)!=1) exit(1); n++; } return s; }
#define N_MAX 2000
static char frame[70]; static int flen; static char bufs[N_MAX][4096]; static int got[N_MAX];
int main(int argc,char**argv){
  const char*var=argv[1]; int N=atoi(argv[2]); double secs=atof(argv[3]);
  frame[0]=0x81; frame[1]=0x80|64; memset(frame+2,0,4); memset(frame+6,'a',64); flen=70; int expect=66;
  int fds[N_MAX]; for(int i=0;i<N;i++) fds[i]=open_ws();
  long n=0; double warm=now()+1, end=warm+secs, c0=0; int measuring=0; long n0=0;
  if(!strcmp(var,"epoll")){
    int ep=epoll_create1(0);
    for(int i=0;i<N;i++){ fcntl(fds[i],F_SETFL,O_NONBLOCK); struct epoll_event ev={.events=EPOLLIN|EPOLLET,.data.u32=i}; epoll_ctl(ep,EPOLL_CTL_ADD,fds[i],&ev); send(fds[i],frame,flen,MSG_NOSIGNAL); }
    struct epoll_event evs[1024];
    for(;;){ double t=now(); if(!measuring&&t>=warm){measuring=1;c0=cpu();n0=n;} if(t>=end) break;
      int k=epoll_wait(ep,evs,1024,100);
      for(int j=0;j<k;j++){ int i=evs[j].data.u32; int r=recv(fds[i],bufs[i],4096,0); if(r>0) got[i]+=r; while(got[i]>=expect){ got[i]-=expect; n++; send(fds[i],frame,flen,MSG_NOSIGNAL);} } }
  } else {
    struct io_uring_params p; memset(&p,0,sizeof p); int fd=syscall(SYS_io_uring_setup,4096,&p); if(fd<0){perror("setup");return 1;}
    size_t sqsz=p.sq_off.array+p.sq_entries*sizeof(unsigned), cqsz=p.cq_off.cqes+p.cq_entries*sizeof(struct io_uring_cqe); size_t sz=sqsz>cqsz?sqsz:cqsz;
    char*sq=mmap(0,sz,PROT_READ|PROT_WRITE,MAP_SHARED|MAP_POPULATE,fd,IORING_OFF_SQ_RING); char*cq=sq;
    struct io_uring_sqe*sqes=mmap(0,p.sq_entries*sizeof(struct io_uring_sqe),PROT_READ|PROT_WRITE,MAP_SHARED|MAP_POPULATE,fd,IORING_OFF_SQES);
    unsigned*sqtail=(unsigned*)(sq+p.sq_off.tail),*sqmask=(unsigned*)(sq+p.sq_off.ring_mask),*sqarr=(unsigned*)(sq+p.sq_off.array);
    unsigned*cqhead=(unsigned*)(cq+p.cq_off.head),*cqtail=(unsigned*)(cq+p.cq_off.tail),*cqmask=(unsigned*)(cq+p.cq_off.ring_mask);
    struct io_uring_cqe*cqes=(void*)(cq+p.cq_off.cqes);
    unsigned tail=*sqtail; int pending=0;
    #define PUSH(op,i,ud,ptr,LN) do{ unsigned ix=tail&*sqmask; struct io_uring_sqe*e=&sqes[ix]; memset(e,0,sizeof *e); e->opcode=op; e->fd=fds[i]; e->addr=(unsigned long)(ptr); e->len=LN; e->user_data=ud; sqarr[ix]=ix; tail++; pending++; }while(0)
    for(int i=0;i<N;i++){ PUSH(IORING_OP_SEND,i,(unsigned long)i<<1|1,frame,flen); PUSH(IORING_OP_RECV,i,(unsigned long)i<<1,bufs[i],4096); }
    for(;;){ double t=now(); if(!measuring&&t>=warm){measuring=1;c0=cpu();n0=n;} if(t>=end) break;
      __atomic_store_n(sqtail,tail,__ATOMIC_RELEASE);
      syscall(SYS_io_uring_enter,fd,pending,1,IORING_ENTER_GETEVENTS,0,0); pending=0;
      unsigned h=*cqhead, ct=__atomic_load_n(cqtail,__ATOMIC_ACQUIRE);
      while(h!=ct){ struct io_uring_cqe*c=&cqes[h&*cqmask]; h++; unsigned long ud=c->user_data; int i=ud>>1;
        if(!(ud&1)){ if(c->res>0) got[i]+=c->res; while(got[i]>=expect){ got[i]-=expect; n++; PUSH(IORING_OP_SEND,i,(unsigned long)i<<1|1,frame,flen);} PUSH(IORING_OP_RECV,i,(unsigned long)i<<1,bufs[i],4096); } }
      __atomic_store_n(cqhead,h,__ATOMIC_RELEASE);
    }
  }
  double c=cpu()-c0; long m=n-n0; printf("%-6s N=%d msgs/s %.0f client CPU us/msg %.2f\n",var,N,m/secs,c*1e6/m); return 0; }
