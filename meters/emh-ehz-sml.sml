>D
>B
->sensor53 r
>M 1
; EMH eHZ, SML on the optical interface: 9600 8N1
+1,3,s,0,9600,eHZ
1,77070100010800ff@1000,Import,kWh,import,4
1,77070100010801ff@1000,Import T1,kWh,import_t1,4
1,77070100010802ff@1000,Import T2,kWh,import_t2,4
1,77070100100700ff@1,Power,W,power,1
1,77070100000009ff@#,Server id,,server_id,0
#
